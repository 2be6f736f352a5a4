"""Packaging for tfdefense (the user's design card asks for setup.py)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "tfdefense" / "_version.py").read_text(), VERSION)

setup(
    name="tfdefense",
    version=VERSION["__version__"],
    description=(
        "Detect and defend against adversarial examples with variational "
        "autoencoders (CD-VAE, FM-Defense) in Keras 3 / TensorFlow."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["tfdefense", "tfdefense.*"]),
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        # TFP 0.25 is the release built against TF 2.21; it imports tf_keras.
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.21,<2.22",
        "cleverhans>=4.0,<5",
        "tensorflow-datasets>=4.9",
        # tfds 4.9.10's builder imports it lazily (dataset_builder.py) and declares nothing:
        # without it tfds.load / download_and_prepare dies before downloading (issue 15)
        "importlib_resources>=5",
        "keras-tuner>=1.4",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        # imported directly (one BLAS thread for the detectors' small regressions);
        # scikit-learn itself requires it
        "threadpoolctl>=3.1",
        "mlxtend>=0.23",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        # tf.summary (``tfdefense train --tensorboard``, tfdefense.callbacks) lives in this
        # package in TF 2.21: without it tf.summary raises TBNotInstalledError
        "tensorboard>=2.21,<2.22",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            # the default suite runs as `pytest -n 2 --dist loadfile` (one worker per core)
            "pytest-xdist>=3.5",
            "hypothesis>=6",
            "ruff>=0.5",
            "nbformat>=5.9",
            "nbclient>=0.10",
            "ipykernel>=6",
            "tensorflow-serving-api>=2.21,<2.22",
            "foolbox>=3.3,<4",
            # the ART interop / certification cross-checks run in the default suite
            "adversarial-robustness-toolbox>=1.20,<1.21",
            "multiprocess",
            "statsmodels>=0.14",
        ],
        "attacks": ["foolbox>=3.3,<4"],
        "serving": ["tensorflow-serving-api>=2.21,<2.22"],
        # bench/autoattack.py compares our AutoAttack with ART's; not used by the library
        "bench": ["adversarial-robustness-toolbox>=1.20,<1.21", "multiprocess"],
        # ART interop and the ART cross-check of tfdefense.certify (ART's certify needs statsmodels)
        # (ART's AutoAttack imports multiprocess)
        "art": ["adversarial-robustness-toolbox>=1.20,<1.21", "statsmodels>=0.14", "multiprocess"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["tfdefense=tfdefense.cli:main"]},
)
