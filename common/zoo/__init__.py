"""The zoo room: bundle verifier, index (``model_zoo_index.json``) builder / reader, metadata schema, downloads.

Kept light (no torch / monai import here) so ``python -m common.zoo`` and ``ci/*.py`` start fast; import
the submodules (``common.zoo.index``, ``common.zoo.verify``) for the functionality.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
METADATA_SCHEMA_PATH = SCHEMA_DIR / "meta_schema.json"
