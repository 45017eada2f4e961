"""Export: merged models, GGUF files and quantisations, with checksums and parity results."""

from __future__ import annotations

from typing import Any

from tuiapp.screens.overview import OverviewScreen, Section


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _parity(parity: Any) -> str:
    if not parity:
        return ""
    if isinstance(parity, dict):
        return ", ".join(f"{k}={v}" for k, v in list(parity.items())[:3])
    return str(parity)


class ExportScreen(OverviewScreen):
    AREA = "export"
    AREA_TITLE = "Export"
    PURPOSE = (
        "Export will merge a run's adapter into its base, write GGUF (f16, q8_0, q4_k_m, …), check "
        "parity against the transformers model and write a Modelfile and model card. The export "
        "engine is not part of this build yet; every export the store records is listed here "
        "with its size and sha256."
    )
    COMMANDS = (
        ("tuneloop export RUN_ID --quant q4_k_m", "merge, convert to GGUF, quantise, check parity"),
    )
    SECTIONS = (
        Section(
            "export-rows",
            "Exports",
            ("id", "run", "format", "quant", "size", "sha256", "parity", "status", "path"),
            "No exports yet: exports appear here once a run has been exported.",
        ),
    )

    def collect(self, store: Any):
        exports = store.list_exports()
        return (
            {
                "export-rows": [
                    (
                        e.id,
                        e.run_id or "",
                        e.format,
                        e.quant or "",
                        human_size(e.size_bytes),
                        (e.sha256 or "")[:12],
                        _parity(e.parity),
                        e.status,
                        e.path,
                    )
                    for e in exports
                ]
            },
            {"exports": str(len(exports))},
        )
