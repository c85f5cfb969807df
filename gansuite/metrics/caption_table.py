"""The text-to-image table of captioned-digits runs (model=gan_int_cls, data=captioned_digits): one row per data set,
model and setting, the digit accuracy and the attributes' rank correlations for the training phrasings and the
held-out phrasings, as mean ± standard error over seeds, then one line per run.

Read from finished runs: each run's last ``eval/captions_step_*.json`` (``callbacks.caption_metrics``, the highest
step, so a killed run counts with what it measured) gives the values and the data set; its ``.hydra/config.yaml``
gives the model, the seed (the JSON's ``protocol.seed`` seeds the drawn noise, not the run) and the setting; its
``history.csv`` gives ``val/fid_clf_10k`` and ``val/recall_clf_10k`` where the evaluation measured them at that step.
``gansuite-aggregate`` prints it for multirun directories of text-to-image runs.

A setting is the run's configuration apart from its seed: the ``model``, ``data``, ``loss`` and ``text_encoder``
sections and ``trainer.max_steps``, as written (interpolations unresolved), without the keys that differ between
seeds of one setting: any key named ``seed`` (``data.seed``), any value interpolated from the seed, and where
files go (``output_dir``, ``cache_dir``); ``paths``, ``logger``, ``callbacks`` and the rest of ``trainer`` are not
compared. Runs of one setting form one row; where a data set and model have several rows (a sweep, say
``model.module.mode_seeking_weight=0,0.1``), each row is labelled by the keys that differ between them
(``mode_seeking_weight=0.1``: the shortest dotted suffix that names one key), so the table reads as an ablation.
Runs without a ``.hydra/config.yaml`` are grouped by data set and model alone.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gansuite.errors import ConfigError
from gansuite.history import HISTORY_CSV
from gansuite.metrics.summary import Summary, summarize

PATTERN = "captions_step_*.json"
_STEP = re.compile(r"captions_step_(\d+)\.json")
# gansuite.metrics.captions.caption_metrics's keys, over gansuite.data.captions.ATTRIBUTES (not imported: that
# module loads torch, and this table is read by a command that does not need it).
ATTRIBUTES = ("thickness", "slant", "size")
HELDOUT = "_heldout_phrasing"
VALUES = tuple(f"{key}{suffix}" for suffix in ("", HELDOUT)
               for key in ("digit_acc", *(f"rank_corr_{a}" for a in ATTRIBUTES)))
# The evaluation's numbers (callbacks.evaluation, history.csv), taken at the step of the captions measurement.
EVALUATION = ("fid_clf_10k", "recall_clf_10k")
# What makes a setting: these sections of the run's config, and of the trainer only the training length (the
# rest of it says where and how fast, not what is trained).
SETTING_SECTIONS = ("model", "data", "loss", "text_encoder")
SETTING_KEYS = ("trainer.max_steps",)
# Keys, by their last name, that differ between seeds of one setting or only say where files go.
_UNCOMPARED = frozenset({"seed", "output_dir", "cache_dir"})
_FROM_SEED = re.compile(r"\$\{[^}]*\bseed\b")  # ${seed}, ${data.seed}, ${oc.select:seed,0}
_TARGET = "._target_"


@dataclass(frozen=True)
class CaptionRun:
    path: Path
    model: str
    data: str  # the protocol's data name, e.g. captioned_digits-28px
    seed: int | None
    step: int
    values: dict[str, float]  # VALUES
    evaluation: dict[str, float] = field(default_factory=dict)  # EVALUATION keys measured at ``step``
    # The config's SETTING_SECTIONS and SETTING_KEYS as dotted keys, interpolations as written; None without a
    # .hydra/config.yaml. caption_table leaves out the keys that differ between seeds.
    setting: dict[str, Any] | None = None


def _last_measurement(run_dir: Path) -> Path | None:
    """The highest-step captions JSON, by the step in its name (a number, so step 1,000,000 sorts after 999,999)."""
    steps = {int(m.group(1)): p for p in (run_dir / "eval").glob(PATTERN) if (m := _STEP.fullmatch(p.name))}
    return steps[max(steps)] if steps else None


def _evaluation_at(run_dir: Path, step: int) -> dict[str, float]:
    """``val/<key>`` of EVALUATION logged at ``step`` in the run's history.csv, read as gansuite-compare reads it
    (:func:`gansuite.training.runs.read_history`: the last row wins, rows cut short by a killed run are skipped)."""
    from gansuite.training.runs import CompareError, Run, read_history

    path = run_dir / HISTORY_CSV
    if not path.is_file():
        return {}
    run = Run(path=run_dir)
    try:
        read_history(path, run)
    except CompareError as err:
        raise ConfigError(f"{err}; pass run directories written by gansuite-train.") from None
    return {key: run.series[f"val/{key}"][step] for key in EVALUATION if step in run.series.get(f"val/{key}", {})}


def _flatten(value: Any, key: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for name, item in value.items():
            _flatten(item, f"{key}.{name}", out)
    else:  # a value, a list, an empty section
        out[key] = value


def _setting(config: Any) -> dict[str, Any]:
    """SETTING_SECTIONS and SETTING_KEYS of a run's config as dotted keys. Unresolved: ``${hydra:...}`` resolves
    only inside Hydra, and ``${seed}`` is the same text in every seed of a setting."""
    container = OmegaConf.to_container(config, resolve=False)
    flat: dict[str, Any] = {}
    for section in SETTING_SECTIONS:
        if section in container:
            _flatten(container[section], section, flat)
    for key in SETTING_KEYS:
        section, name = key.split(".", 1)
        if isinstance(container.get(section), dict) and name in container[section]:
            flat[key] = container[section][name]
    return flat


def read_caption_run(run_dir: Path) -> CaptionRun | None:
    """The run's last captions measurement with its model, seed, setting and evaluation, or None when it has
    none."""
    result = _last_measurement(run_dir)
    if result is None:
        return None
    try:
        record = json.loads(result.read_text())
        config_file = run_dir / ".hydra" / "config.yaml"
        config = OmegaConf.load(config_file) if config_file.is_file() else None
        model = OmegaConf.select(config, "model.name") if config is not None else None
        seed = OmegaConf.select(config, "seed") if config is not None else None
        setting = _setting(config) if config is not None else None
        step = int(record["step"])
        values = {key: float(record["values"][key]) for key in VALUES}
        data = str(record["protocol"]["data"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{result} is not a captions measurement ({type(err).__name__}: {err}); pass run "
                          "directories written by gansuite-train with callbacks.caption_metrics.") from None
    return CaptionRun(path=run_dir, model=str(model or "?"), data=data, seed=None if seed is None else int(seed),
                      step=step, values=values, evaluation=_evaluation_at(run_dir, step), setting=setting)


def find_caption_runs(paths: list[Path]) -> list[CaptionRun]:
    """Every run with a captions measurement under ``paths`` (multirun or run directories)."""
    dirs = {hit.parent.parent.resolve() for path in paths if path.is_dir() for hit in path.rglob(f"eval/{PATTERN}")}
    return [run for run in (read_caption_run(d) for d in sorted(dirs)) if run is not None]


def _canonical(value: Any) -> Any:
    """A hashable, orderable form in which equal settings are equal: 0 and 0.0 alike (an override ``=0`` of a
    default 0.0), true and 1 not."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(map(_canonical, value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    return ("null", repr(value))


_ABSENT = ("~absent",)  # a key one setting lacks: after every value


def _short_names(keys: list[str], every: set[str]) -> dict[str, str]:
    """Each of ``keys`` by its shortest dotted suffix that no other key of ``every`` ends with
    (``model.module.mode_seeking_weight``: ``mode_seeking_weight``; ``model.g_optimizer.lr``: ``g_optimizer.lr``,
    as D's has an lr); a class (``..._target_``) by the node it builds (``loss.objective.d_loss``: ``d_loss``)."""
    bases = {key: key.removesuffix(_TARGET) for key in every | set(keys)}
    names = {}
    for key in keys:
        parts = bases[key].split(".")
        others = [bases[other] for other in bases if other != key]
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(o == suffix or o.endswith(f".{suffix}") for o in others):
                break
        names[key] = suffix
    return names


def _show(value: Any, target: bool = False) -> str:
    """A value as an override writes it; a class by its name (``gansuite.losses.hinge_d``: ``hinge_d``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value.rsplit(".", 1)[-1] if target else value
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _labels(settings: list[dict[str, Any] | None]) -> tuple[list[str], list[str | None]]:
    """The keys that differ between the settings of one data set and model (in config order), and each setting's
    label: ``key=value`` of those keys, shortened; None for a single setting."""
    if len(settings) == 1:
        return [], [None]
    known = [s for s in settings if s is not None]
    every = list(dict.fromkeys(key for s in known for key in s))  # config order: model, data, loss, ...
    differing = [key for key in every if len({_canonical(s[key]) if key in s else _ABSENT for s in known}) > 1]
    short = _short_names(differing, set(every))
    labels: list[str | None] = []
    for s in settings:
        if s is None:
            labels.append("no config")
            continue
        shown = [f"{short[key]}={_show(s[key], key.endswith(_TARGET)) if key in s else '—'}" for key in differing]
        labels.append(" ".join(shown) or "—")
    return differing, labels


def _order(setting: dict[str, Any] | None, differing: list[str]) -> tuple[Any, ...]:
    """Rows of one data set and model by the values of the keys that differ (numbers by value: 0.1 before 0.25),
    runs without a config last."""
    return (setting is None,
            *(_canonical(setting[key]) if setting is not None and key in setting else _ABSENT for key in differing))


def caption_table(runs: list[CaptionRun]) -> dict[str, Any]:
    """``{"evaluation": [keys any run has], "rows": [...], "runs": [...], "run_setting": [...]}``: one row per
    (data, model, setting) with ``setting`` (its label where the data set and model have several settings, else
    None), ``differs`` (the values of the keys that tell the settings apart), ``n``, ``seeds``, ``steps`` (every
    step its runs end at: more than one means a row averages over training lengths), a Summary per VALUES key,
    and per EVALUATION key a Summary over the runs that measured it with their count (``<key>_n``); ``runs`` in
    the rows' order, ``run_setting`` their rows' labels."""
    # Keys that differ between seeds of one setting: by name, or interpolated from the seed in any run.
    uncompared = {key for run in runs if run.setting is not None for key, value in run.setting.items()
                  if key.rsplit(".", 1)[-1] in _UNCOMPARED or _FROM_SEED.search(str(value))}
    groups: dict[tuple[str, str], dict[Any, list[CaptionRun]]] = {}
    settings: dict[Any, dict[str, Any] | None] = {}
    for run in runs:
        setting = None if run.setting is None else {k: v for k, v in run.setting.items() if k not in uncompared}
        key = None if setting is None else tuple(sorted((k, _canonical(v)) for k, v in setting.items()))
        settings.setdefault(key, setting)
        groups.setdefault((run.data, run.model), {}).setdefault(key, []).append(run)
    evaluation = [key for key in EVALUATION if any(key in r.evaluation for r in runs)]
    rows, ordered, run_setting = [], [], []
    for (data, model), by_setting in sorted(groups.items()):
        keys = list(by_setting)
        differing, labels = _labels([settings[k] for k in keys])
        order = [_order(settings[k], differing) for k in keys]
        for i in sorted(range(len(keys)), key=order.__getitem__):
            members, setting = by_setting[keys[i]], settings[keys[i]]
            members.sort(key=lambda r: (r.seed is None, r.seed, str(r.path)))
            ordered += members
            run_setting += [labels[i]] * len(members)
            row: dict[str, Any] = {
                "data": data, "model": model, "setting": labels[i],
                "differs": {} if setting is None else {key: setting[key] for key in differing if key in setting},
                "n": len(members), "seeds": [r.seed for r in members], "steps": sorted({r.step for r in members})}
            row.update({key: summarize([r.values[key] for r in members]) for key in VALUES})
            for key in evaluation:
                measured = [r.evaluation[key] for r in members if key in r.evaluation]
                row[key] = summarize(measured) if measured else None
                row[f"{key}_n"] = len(measured)
            row["runs"] = [str(r.path) for r in members]
            rows.append(row)
    return {"evaluation": evaluation, "rows": rows, "runs": ordered, "run_setting": run_setting}


def _steps(steps: list[int]) -> str:
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"


# Column headers and digits: accuracy in percent, Spearman's rho, then the evaluation's numbers.
_HEADERS = {"digit_acc": "digit acc %", **{f"rank_corr_{a}": f"{a} ρ" for a in ATTRIBUTES},
            "fid_clf_10k": "FID clf 10k", "recall_clf_10k": "recall clf 10k"}
_DIGITS = {"digit_acc": 1, "fid_clf_10k": 2, "recall_clf_10k": 3}


def _header(key: str) -> str:
    base = key.removesuffix(HELDOUT)
    return _HEADERS[base] + (" h.o." if base != key else "")


def _cell(key: str, s: Summary) -> str:
    base = key.removesuffix(HELDOUT)
    return s.format(_DIGITS.get(base, 2), scale=100 if base == "digit_acc" else 1)


def _render(header: list[str], lines: list[list[str]], left: int) -> list[str]:
    """Aligned columns, the first ``left`` of them left-aligned."""
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths,
                                                                                                       strict=True)))
              for r in [header, *lines]]
    return [render[0], "  ".join("-" * w for w in widths), *render[1:]]


def _display(path: Path) -> str:
    """A run's folder relative to the working directory when it is under it: the listing stays narrow."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def _name(row: dict[str, Any]) -> str:
    """A row's model, with its setting where it has one: ``gan_int_cls (mode_seeking_weight=0.1)``."""
    return row["model"] if row["setting"] is None else f"{row['model']} ({row['setting']})"


def format_caption_table(table: dict[str, Any]) -> str:
    """The table as aligned text, the notes, then one line per run (its folder, seed, step and values)."""
    evaluation = table["evaluation"]
    keys = [*VALUES, *evaluation]
    # The setting column only where a data set and model have several settings (an ablation).
    ablation = any(row["setting"] is not None for row in table["rows"])
    setting = ["setting"] if ablation else []
    header = ["data", "model", *setting, "n", "steps", *map(_header, keys)]
    lines = []
    for row in table["rows"]:
        cells = [_cell(key, row[key]) for key in VALUES]
        for key in evaluation:
            s, k = row[key], row[f"{key}_n"]
            cells.append("—" if s is None else _cell(key, s) + ("" if k == row["n"] else f" ({k} of {row['n']})"))
        lines.append([row["data"], row["model"], *([row["setting"] or "—"] if ablation else []), str(row["n"]),
                      _steps(row["steps"]), *cells])
    notes = ["mean ± standard error over the n runs (seeds; sample std, ddof=1, over sqrt(n)); each run's last "
             "captions measurement (callbacks.caption_metrics) on the held-out digits' captions; digit acc: read as "
             "the named digit by the offline MNIST's classifier; ρ: Spearman's rank correlation between the level "
             "a caption asks for and the measured attribute; h.o.: held-out phrasings"]
    if evaluation:
        notes.append("FID / recall: the evaluation (history.csv val/...) at the step of that measurement; "
                     "(k of n): only k of the runs measured it there")
    if ablation:
        notes.append("setting: the keys of model, data, loss, text_encoder and trainer.max_steps (.hydra/config.yaml) "
                     "whose values differ between the rows of one data set and model; seeds of one setting pooled")
    notes += [f"{_name(row)} on {row['data']}: its runs end at different steps ({_steps(row['steps'])}), "
              "averaged in one row; a killed run? see the runs below" for row in table["rows"] if len(row["steps"]) > 1]
    run_header = ["run", "model", *setting, "seed", "step", *map(_header, keys)]
    run_lines = [[_display(r.path), r.model, *([label or "—"] if ablation else []),
                  "—" if r.seed is None else str(r.seed), str(r.step),
                  *(_cell(key, Summary(r.values[key], None)) for key in VALUES),
                  *(_cell(key, Summary(r.evaluation[key], None)) if key in r.evaluation else "—"
                    for key in evaluation)] for r, label in zip(table["runs"], table["run_setting"], strict=True)]
    left = 3 if ablation else 2
    return "\n".join([*_render(header, lines, left), "", *notes, "", *_render(run_header, run_lines, left)])


def _number(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _plain(s: Summary | None) -> dict[str, float | None] | None:
    return None if s is None else {"mean": _number(s.mean), "sem": _number(s.sem)}


def caption_json(table: dict[str, Any]) -> dict[str, Any]:
    """The table as plain JSON: summaries as ``{"mean", "sem"}`` (null sem for one run), then every run's values."""
    rows = []
    for row in table["rows"]:
        item = {k: v for k, v in row.items() if k != "runs"}
        item.update({key: _plain(row[key]) for key in (*VALUES, *table["evaluation"])})
        rows.append({**item, "runs": row["runs"]})
    return {
        "protocol": "callbacks.caption_metrics: each run's last measurement on the held-out digits' captions "
                    "(training phrasings, and held-out phrasings: keys ending _heldout_phrasing); digit_acc a "
                    "fraction, rank_corr_* Spearman's rho; fid_clf_10k / recall_clf_10k from history.csv at that "
                    "step, over the <key>_n runs that measured it there",
        "error": "standard error of the mean: sample std (ddof=1) / sqrt(n); null for n = 1",
        "setting": "one row per data, model and setting (.hydra/config.yaml's model, data, loss, text_encoder and "
                   "trainer.max_steps, apart from the seed); where a data set and model have several rows, setting "
                   "labels each by the keys that differ between them and differs gives those keys' values in full; "
                   "null setting and empty differs for a single row",
        "rows": rows,
        "runs": [{"path": str(r.path), "model": r.model, "setting": label, "data": r.data, "seed": r.seed,
                  "step": r.step, "values": {k: _number(v) for k, v in r.values.items()},
                  **{key: _number(r.evaluation.get(key)) for key in table["evaluation"]}}
                 for r, label in zip(table["runs"], table["run_setting"], strict=True)],
    }
