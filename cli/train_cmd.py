"""`stitch train CONFIG.toml`: train the learned refiner (needs torch and kornia).

Progress goes to stderr (a rich bar on a terminal, one line per evaluation otherwise); the summary
goes to stdout. Errors are one line, like every other command.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from stitch.cli.console import emit_json, one_line, stderr_console
from stitch.cli.options import json_option, parse_value, quiet_option

from stitch.errors import ConfigError, StitchError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _parse_set(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` overrides (value parsed as TOML, else kept as a string)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=100")
        out.setdefault(section, {})[name] = parse_value(raw)
    return out


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


@click.command("train")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the configuration and data, print the plan, train nothing.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue exactly from this checkpoint (e.g. runs/NAME/last.pt).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None,
              help="Where to train (default: the config's run.device; auto = CUDA when available).")
@click.option("-s", "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. -s train.max_steps=200 -s data.root=photos/ (repeatable).")
@json_option("Write the summary (or, with --dry-run, the plan) as JSON to this file ('-': stdout).")
@quiet_option("No progress display.")
def train(config: Path, dry_run: bool, resume: Path | None, device: str | None, overrides: tuple[str, ...],
          json_path: Path | None, quiet: bool) -> None:
    """Train the learned homography refiner as CONFIG.toml says (see configs/).

    Writes checkpoints, metrics (CSV/JSON), plots and the exported weights (refiner.pt) into the
    config's run.out_dir.
    """
    try:
        _train(config, dry_run, resume, device, overrides, json_path, quiet)
    except StitchError as exc:
        raise click.ClickException(one_line(exc)) from None


def _train(config: Path, dry_run: bool, resume: Path | None, device: str | None, overrides: tuple[str, ...],
           json_path: Path | None, quiet: bool) -> None:
    from stitch.deep import require_torch

    require_torch()
    from stitch.deep.config import load_config
    from stitch.deep.train import describe, plan_warnings, train

    cfg = load_config(config, _parse_set(overrides))
    console = stderr_console()
    for warning in plan_warnings(cfg, device):
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        plan = describe(cfg, device)
        if json_path is not None:
            emit_json(json_path, plan, quiet=quiet)
            return
        click.echo(f"config {config}: {plan['params']:,} parameters on {plan['device']} (amp {plan['amp']})")
        click.echo(f"data: {plan['train_images']} training / {plan['val_images']} validation images, split "
                   f"{plan['split']}" + (f": train {', '.join(plan['train_sets'])}; val {', '.join(plan['val_sets'])}"
                                         if plan["train_sets"] else ""))
        for g in plan["groups"]:
            click.echo(f"  group {g['name']}: lr {_fmt(g['lr'])}, weight decay {_fmt(g['weight_decay'])}, "
                       f"{g['tensors']} tensors")
        click.echo("lr at step: " + ", ".join(f"{t}: {_fmt(v['head'])}" for t, v in plan["lr_at_step"].items()))
        click.echo(f"{plan['samples']:,} training samples; outputs in {plan['out_dir']}")
        return

    command = "stitch train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else None
    show = not quiet and console.is_terminal
    last_val: dict[str, Any] = {}

    def note(step: int, total: int, info: dict[str, Any]) -> None:
        if info.get("kind") == "val":
            last_val.update(info)
            if not quiet and not show:
                console.print(f"step {step}/{total}: val MACE detone {_fmt(info['val_mace_detone'])} px, refiner "
                              f"{_fmt(info['val_mace_refiner'])} px (best {_fmt(info['best'])})",
                              markup=False, highlight=False)

    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[label]}"))
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("train", total=cfg.train.max_steps, label="")

            def progress(step: int, total: int, info: dict[str, Any]) -> None:
                note(step, total, info)
                if info.get("kind") == "train":
                    v = f" | val {last_val['val_mace']:.2f} px" if "val_mace" in last_val else ""
                    bar.update(task, completed=step, label=f"loss {info['loss']:.3f} lr {info['lr_head']:.2e}{v}")

            result = train(cfg, device, resume, progress, command)
    else:
        result = train(cfg, device, resume, note, command)
    summary = {"step": result.step, "stopped": result.stopped, "best": result.best, "final": result.final,
               "exported": result.exported, "export_source": result.export_source, "seconds": round(result.seconds, 1),
               "params": result.params, "out_dir": str(result.out_dir)}
    if json_path is not None:
        emit_json(json_path, summary, quiet=quiet)
    else:
        f = result.final
        click.echo(f"trained {result.step} steps in {result.seconds / 60:.1f} min ({result.stopped}); "
                   f"val MACE detone {_fmt(f.get('val_mace_detone'))} px, refiner {_fmt(f.get('val_mace_refiner'))} px; "
                   f"wrote {result.exported} (from the {result.export_source} weights)")
