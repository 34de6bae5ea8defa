"""Built-in data: anatomy-grounded populations (brain 3D/2D, chest X-ray, mammography, OCT) and their analysers.

``python -m common.data make brain|cxr|mammo|oct --n N --out DIR`` writes NIfTI / PNG files and a datalist.
Submodules: ``brain`` (``generate_subject``, ``analyse_volumes``, ``normalise_covariates``), ``cxr``
(``generate``, ``analyse``), ``mammo`` and ``oct`` (``generate``, ``analyse``). This package stays light:
heavy imports (torch, nilearn, scipy) happen inside the submodules that need them.
"""

POPULATIONS = ("brain", "cxr", "mammo", "oct")
