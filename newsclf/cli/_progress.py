"""What a training command shows while it trains: a progress bar or log lines, and quiet libraries."""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from typing import Any

from newsclf.cli import _output


def quiet_libraries() -> None:
    """transformers/datasets chatter (load reports, tqdm bars) off unless --debug."""
    if _output.state.debug:
        return
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def progress_callback() -> Any:
    """A TrainerCallback: a rich bar on a terminal, plain log lines otherwise (rank 0 only)."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.stack = ExitStack()
            self.bar: Any = None
            self.task: Any = None
            self.loss: float | None = None
            self.t0 = 0.0
            self.step0 = 0
            self.last_line = 0.0

        def close(self) -> None:
            self.stack.close()
            self.bar = None

        def _sps(self, args: Any, state: Any) -> float:
            elapsed = time.perf_counter() - self.t0
            batch = args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            return (state.global_step - self.step0) * batch / elapsed if elapsed > 0 else 0.0

        def _epoch(self, args: Any, state: Any) -> str:
            current = max(1, math.ceil((state.epoch or 0) - 1e-9))
            return f"epoch {current}/{math.ceil(args.num_train_epochs)}"

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            self.t0, self.step0 = time.perf_counter(), state.global_step
            if _output.show_progress():
                self.bar = self.stack.enter_context(
                    _output.progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        TextColumn("step {task.completed}/{task.total}"),
                        TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[sps]} samples/s"),
                        TimeElapsedColumn(),
                        TextColumn("ETA"),
                        TimeRemainingColumn(),
                    )
                )
                self.task = self.bar.add_task(
                    self._epoch(args, state), total=state.max_steps, completed=state.global_step, loss="-", sps="-"
                )
            else:
                start = f" from step {state.global_step}" if state.global_step else ""
                _output.info(f"Training {state.max_steps} steps ({args.num_train_epochs:g} epochs){start}")

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.update(
                    self.task,
                    completed=state.global_step,
                    description=self._epoch(args, state),
                    loss=fmt(self.loss),
                    sps=f"{self._sps(args, state):.1f}",
                )

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            self.loss = float(logs["loss"])
            if self.bar is None:
                sps = self._sps(args, state)
                left = state.max_steps - state.global_step
                steps_per_s = sps / max(1, args.train_batch_size * max(1, args.world_size))
                eta = f"{left / steps_per_s:.0f}s" if steps_per_s > 0 else "?"
                _output.info(
                    f"{self._epoch(args, state)}  step {state.global_step}/{state.max_steps}  "
                    f"loss {self.loss:.4f}  {sps:.1f} samples/s  ETA {eta}"
                )

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not metrics:
                return
            prefix = "test" if any(k.startswith("test_") for k in metrics) else "eval"
            name = "test" if prefix == "test" else f"epoch {state.epoch:g} validation"
            line = (
                f"{name}: accuracy {fmt(metrics.get(f'{prefix}_accuracy'))}  "
                f"macro-F1 {fmt(metrics.get(f'{prefix}_macro_f1'))}  loss {fmt(metrics.get(f'{prefix}_loss'))}"
            )
            if self.bar is not None:
                self.bar.console.print(line, highlight=False)
            else:
                _output.info(line)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.close()

    return Progress()
