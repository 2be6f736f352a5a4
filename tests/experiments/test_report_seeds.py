"""reproduce --seeds: cells combined over seeds (hand case), the CPU line, a tiny 2-seed run."""

import json
import os

import pytest

from tfdefense import cli
from tfdefense.experiments import Context, Result, register
from tfdefense.report import cpu_info, cpu_line
from tfdefense.report_seeds import combine_cell, combine_results, reproduce_seeds

COLUMNS = ["pair", "cosine", "Fréchet", "paper FID", "top-1", "TNR / AUC", "note"]


def _result(seed, cos, fd, top1, tnr_auc, note="4 draws", status=None):
    rows = [{"pair": "R(x) vs R(x′)", "cosine": cos, "Fréchet": fd, "paper FID": 22.31,
             "top-1": f"{top1} (paper 96.01)", "TNR / AUC": f"{tnr_auc} (paper 42.38 / 85.74)",
             "note": note}]
    meas = {"R": {"frechet": fd}, "extractor": "D̂"} if status is None else {"status": status, "error": "boom"}
    return Result("t", "T", "quick", "mnist_5k", columns=COLUMNS, rows=rows, notes=[f"seed {seed}"],
                  measurements=meas, seconds=10.0 * (seed + 1))


def test_three_seeds_combine_into_exact_cells():
    results = [_result(0, "0.9657 ± 0.0317", 2.0, "97.00", "36.44 / 87.77"),
               _result(1, "0.9651 ± 0.0301", 3.0, "96.00", "37.44 / 88.77"),
               _result(2, "0.9645 ± 0.0320", 4.0, "98.00", "38.44 / 89.77")]
    row, = combine_results(results, [0, 1, 2]).rows
    assert row == {
        "pair": "R(x) vs R(x′)",
        "cosine": "0.9651 ± 0.0006 (0.9645–0.9657), per image ± 0.0313",
        "Fréchet": "3.00 ± 1.00 (2.00–4.00)",
        "paper FID": 22.31,
        "top-1": "97.00 ± 1.00 (96.00–98.00) (paper 96.01)",
        "TNR / AUC": "37.44 ± 1.00 (36.44–38.44) / 88.77 ± 1.00 (87.77–89.77) (paper 42.38 / 85.74)",
        "note": "4 draws",
    }
    combined = combine_results(results, [0, 1, 2])
    assert combined.measurements["R"]["frechet"] == {"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0,
                                                    "values": [2.0, 3.0, 4.0]}
    assert combined.measurements["extractor"] == "D̂" and combined.seconds == 20.0
    assert combined.notes[1] == "seed 0" and "over seeds 0, 1, 2" in combined.notes[0]


def test_a_failed_seed_is_left_out_and_named():
    results = [_result(0, "0.50 ± 0.10", 1.0, "90.00", "1.00 / 2.00"),
               _result(1, "x", 0.0, "0", "0", status="failed"),
               _result(2, "0.70 ± 0.10", 3.0, "92.00", "3.00 / 4.00")]
    combined = combine_results(results, [0, 1, 2])
    assert combined.rows[0]["Fréchet"] == "2.00 ± 1.41 (1.00–3.00)"
    assert "FAILED under seed(s) 1 (boom)" in combined.notes[0]
    assert combined.measurements["seeds"] == [0, 2]


@pytest.mark.parametrize("values, expected", [
    (["–", "97.00", "96.00"], "per seed: –; 97.00; 96.00"),
    ([1.0, 1.0, 1.0], "1.00 ± 0.00 (1.00–1.00)"),
    (["needs a GPU (paper 1.0)"] * 3, "needs a GPU (paper 1.0)"),
    (["3.00e-12", "1.00e-12", "2.00e-12"], "2.00e-12 ± 1.00e-12 (1.00e-12–3.00e-12)"),
])
def test_other_cells(values, expected):
    assert combine_cell(values) == expected


AVX512_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_line_from_a_fake_cpuinfo():
    info = cpu_info(AVX512_AMX)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz" and info["logical_cpus"] == 2
    assert info["absent"] == []
    assert cpu_line(info) == ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (2 logical CPUs); sse4_2, "
                              "avx, avx2, fma, avx512f, avx512bw, avx512_vnni, avx512_bf16, amx_tile, "
                              "amx_bf16, amx_int8")
    epyc = cpu_info("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx avx2 fma sse4_2\n")
    assert cpu_line(epyc) == ("AMD EPYC 7B12 (1 logical CPUs); sse4_2, avx, avx2, fma; no avx512f, "
                              "avx512_bf16, amx_tile, amx_bf16, amx_int8")


def test_seeds_refused_below_two_and_with_a_seed_setting(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        reproduce_seeds("quick", str(tmp_path), 1)
    with pytest.raises(ValueError, match="seed"):
        reproduce_seeds("quick", str(tmp_path), 2, overrides={"seed": 3})
    assert cli.main(["reproduce", "--out", str(tmp_path), "--seeds", "2", "--dry-run"]) == 2


def test_seed_zero_keeps_the_plain_runs_fingerprints(tmp_path):
    plain = Context("quick", str(tmp_path), {"eval_images": 7})
    seeded = Context("quick", str(tmp_path), {"eval_images": 7, "seed": 0})
    assert plain.fingerprint() == seeded.fingerprint()


@register("test_seeds_demo", order=997)
def _seeded(ctx):
    """A cheap experiment whose number moves with the seed, with a figure."""
    import matplotlib.pyplot as plt

    path = ctx.figure_path("demo")
    plt.figure().savefig(path)
    plt.close("all")
    accuracy = 90.0 + ctx.settings["seed"] + ctx.settings["eval_images"] / 100
    return Result("test_seeds_demo", "Demo", ctx.preset, ctx.dataset, columns=["row", "accuracy", "paper"],
                  rows=[{"row": "x", "accuracy": f"{accuracy:.2f} (paper 96.01)", "paper": 1.5}],
                  figures={"demo": path}, measurements={"accuracy": accuracy})


def test_two_seeds_through_the_cli(tmp_path):
    """``tfdefense reproduce --seeds 2``: a run per seed in its folder, one combined report (fast)."""
    out = str(tmp_path)
    assert cli.main(["reproduce", "--out", out, "--seeds", "2", "--only", "test_seeds_demo",
                     "--set", "eval_images=7"]) == 0
    for seed in (0, 1):
        payload = json.load(open(os.path.join(out, f"seed{seed}", "results.json"), encoding="utf-8"))
        assert payload["settings"]["seed"] == seed and payload["settings"]["eval_images"] == 7
        assert payload["cpu"]["model"]
    combined = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    assert combined["seeds"] == [0, 1] and combined["folders"] == ["seed0", "seed1"]
    assert "seed" not in combined["settings"] and combined["cpu"] == payload["cpu"]
    demo, = combined["experiments"]
    assert demo["rows"] == [{"row": "x", "accuracy": "90.57 ± 0.71 (90.07–91.07) (paper 96.01)",
                             "paper": 1.5}]
    assert demo["measurements"]["accuracy"]["values"] == [90.07, 91.07]
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "2 seeds" in report and "**CPU**" in report and "](seed0/figures/demo.png)" in report
    assert "| x | 90.57 ± 0.71 (90.07–91.07) (paper 96.01) | 1.50 |" in report


def _write_run(folder, results, seconds=5.0):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as fh:
        json.dump({"experiments": [r.to_json() for r in results], "seconds": seconds, "failed": []}, fh)


def test_runs_made_apart_combine_without_running_and_only_where_every_seed_ran(tmp_path, capsys):
    """``--seeds 3 --combine-only``: seed 0 a longer run, seeds 1, 2 run apart; nothing reruns."""
    out = str(tmp_path)
    extra = Result("only_seed0", "O", "quick", "mnist_5k", ["a"], [{"a": 1.0}])
    _write_run(os.path.join(out, "seed0"), [_result(0, 0.60, 46.29, 97.0, "36.44 / 87.77"), extra])
    _write_run(os.path.join(out, "seed1"), [_result(1, 0.62, 53.48, 96.0, "38.00 / 88.00")])
    _write_run(os.path.join(out, "seed2"), [_result(2, 0.61, 50.00, 98.0, "40.00 / 89.00")])
    assert cli.main(["reproduce", "--out", out, "--seeds", "3", "--combine-only"]) == 0
    combined = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    t, = combined["experiments"]  # only_seed0 is not in every seed: left out, not "± 0"
    row, = t["rows"]
    # Fréchet: mean (46.29 + 53.48 + 50.00) / 3 = 49.923; deviations -3.633, 3.557, 0.077;
    # sample variance (13.199 + 12.652 + 0.006) / 2 = 12.93, std 3.60
    assert row["Fréchet"] == "49.92 ± 3.60 (46.29–53.48)"
    assert row["top-1"] == "97.0 ± 1.0 (96.0–98.0) (paper 96.01)"  # the cells' own digits
    assert combined["seeds"] == [0, 1, 2] and combined["seconds"] == 15.0
    assert cli.main(["reproduce", "--out", out, "--seeds", "4", "--combine-only"]) == 2
    assert "seed3 holds no results.json" in capsys.readouterr().err
    assert cli.main(["reproduce", "--out", out, "--combine-only"]) == 2
    assert "give --seeds N" in capsys.readouterr().err


@pytest.mark.slow
def test_two_seeds_end_to_end(tmp_path, tiny_settings):
    """``tfdefense reproduce --seeds 2`` of Table 1 on tiny settings: two runs, one combined report
    (~30 s on 2 shared cores)."""
    out = str(tmp_path)
    tiny = {**tiny_settings, "train_images": 128, "eval_images": 16, "latent_dim": 4, "width": 4,
            "pgd_steps": 1}
    args = ["reproduce", "--out", out, "--seeds", "2", "--only", "cdvae_table1"]
    for key, value in tiny.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    assert cli.main(args) == 0
    for seed in (0, 1):
        payload = json.load(open(os.path.join(out, f"seed{seed}", "results.json"), encoding="utf-8"))
        assert payload["settings"]["seed"] == seed and payload["cpu"]["model"]
    combined = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    assert combined["seeds"] == [0, 1] and combined["folders"] == ["seed0", "seed1"]
    table1, = combined["experiments"]
    g, r = table1["rows"][:2]
    assert g["cosine similarity"].count("±") == 2 and "per image ±" in g["cosine similarity"]
    assert r["Fréchet distance"].count("–") == 1 and r["paper FID"] == 22.31
    assert set(table1["measurements"]["R"]["frechet"]) == {"mean", "std", "min", "max", "values"}
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "2 seeds" in report and "**CPU**" in report and "](seed0/figures/" in report
