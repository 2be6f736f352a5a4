"""What every dry-run slow test checks (``test_dry_run_*.py``, one file per group of
experiments so CI's slow-test runner can fit each group on its own)."""

from tfdefense.experiments.dry_run import dry_run


def check_dry_run(preset: str, only: list[str], out, trial_resumed: tuple[str, ...] = ()) -> dict:
    """Run ``preset``'s ``only`` experiments on mock data; assert none failed, every training
    resumes after preemption, the plan covers every fit; return {experiment name: Result}.

    ``trial_resumed``: experiments whose fits run inside a keras-tuner search, which resumes
    per finished trial (the tuner's folder in the cache), not per epoch: only their fits may
    lack a backup."""
    run = dry_run(preset, str(out), only=only, log=lambda *_: None)
    assert run.reproduction.failed == [], run.reproduction.failed
    results = {r.name: r for r in run.reproduction.results}
    assert set(only) <= set(results)
    for r in results.values():
        assert "not run" not in r.title and "FAILED" not in r.title, r.title
    assert run.fits
    fragile = [(f.experiment, f.model) for f in run.fits if not f.resumable]
    assert all(experiment in trial_resumed for experiment, _ in fragile), fragile
    assert len(run.plan) == len(run.fits)
    assert (out / "dry_run.json").exists() and (out / "report.md").exists()
    return {"results": results, "run": run}
