"""The ``paper_imagenet`` preset: CD-VAE's restricted-ImageNet settings (CD-VAE §4).

A VQ-VAE G (d = 64, k = 128 codes, latent loss 0.1·(codebook + 0.5·commitment),
the authors' answer on their issue tracker) and a ResNet-50 D on restricted
ImageNet at 224x224 (see ``tfdefense.data_imagenet`` for why not 299), AdamW
with weight decay 1e-6, 60 epochs (§4); γ = 2 for the empirical study and
detection, γ = 2e-1 for the grey-box defense (§4.3). Every key here is read
through ``Context.settings`` before ``cdvae_models.SETTINGS``. Needs the
ImageNet archives and a GPU.

Example:
    >>> from tfdefense.experiments.imagenet_preset import PAPER_IMAGENET
    >>> PAPER_IMAGENET["datasets"]["restricted_imagenet"], PAPER_IMAGENET["cdvae_epochs"]
    ('restricted_imagenet', 60)
"""

PAPER_IMAGENET = {
    "datasets": {"cifar10": None, "restricted_imagenet": "restricted_imagenet", "mnist": None,
                 "fashion_mnist": None, "celeb_a": None},
    "cdvae_epochs": 60,  # CD-VAE §4 (restricted ImageNet)
    "classifier_epochs": 60,  # D̂'s schedule is not stated; the CD-VAE's 60
    "batch_size": 128,  # not stated in the paper
    "eval_images": 10150,  # the restricted ImageNet validation set, the paper's test set
    "seed": 0,
    "generator": "vq",  # VQ-VAE G (models.VQCDVAE)
    "classifier": "resnet50",  # ResNet-50 D (nets.resnet50)
    "latent_dim": None,  # VQ code dimension d = 64 (VQCDVAE.for_dataset default)
    "width": None,
    "num_codes": 128,
    "beta": 0.1,  # VQ latent loss weight (authors' answer, kai-wen-yang/CD-VAE#4)
    "gamma": 2.0,  # sweet spot (Tables 1-5)
    "defense_gamma": 0.2,  # CD-VAE §4.3, restricted ImageNet grey-box defense
    "train_images": None,
    "pgd_eps": 8 / 255,
    "pgd_steps": 20,
    "defense_images": 10150,
    "defense_steps": None,  # the attack preset's 100 steps (§4.3)
    "whitebox_images": 1000,
    "eot_samples": 16,
    "detection_train_images": 10000,
    "md_magnitudes": (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005),
    "lid_k": (10, 20, 30, 40, 50, 60, 70, 80, 90),
    "gamma_grid": (2e-4, 2e-3, 2e-2, 2e-1, 2.0, 20.0),
    "sweep_epochs": 6,
    "verbose": 2,
}
