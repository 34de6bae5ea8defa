"""Shared code for the generative model zoo bundles.

The bundles' JSON configs reference ``common.<room>.<Thing>``. Each room is a subpackage with one job;
``import common`` stays light (no torch / monai import here) so that CLIs and the verifier start fast.
"""

__version__ = "0.1.0"
