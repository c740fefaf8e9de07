"""
from newsclf.sweep.grid import *  # noqa: F403
from newsclf.sweep.grid import __all__ as _grid
from newsclf.sweep.local import *  # noqa: F403
from newsclf.sweep.local import __all__ as _local
from newsclf.sweep.model import *  # noqa: F403
from newsclf.sweep.model import __all__ as _model

__all__ = [*_grid, *_model, *_local]
"""

from newsclf.sweep.cloud import (  # noqa: F401
    PLAN_VERSION,
    RUN_SWEEP_ID,
    RUN_SWEEP_JOB,
    RUN_SWEEP_PARAMS,
    RUN_SWEEP_TRIAL,
    CloudEvent,
    CloudSweep,
    PlannedTask,
    final_sweep,
    follow_cloud_sweep,
    is_sweep_job,
    plan_object,
    plan_record,
    plan_remote,
    read_plan_tasks,
    read_task,
    remote_sweep,
    remote_trials,
    start_cloud_sweep,
    task_error,
    upload_task_log,
    write_plans,
    write_trial_plan,
)
from newsclf.sweep.grid import (  # noqa: F401
    ALIASES,
    DEFAULT_METRIC,
    METRICS,
    NOT_SWEEPABLE,
    RUNTIME_ONLY,
    SWEEP_PREFIX,
    SWEEPABLE,
    SWEEPS_DIR,
    TYPES,
    Grid,
    base_identity,
    canonical_name,
    check_sweep_id,
    coerce,
    fmt_value,
    label,
    load_sweep_file,
    make_sweep_id,
    params_key,
    parse_grid,
    resolve_metric,
    short_id,
    trial_options,
    validate_trials,
)
from newsclf.sweep.local import (  # noqa: F401
    SUMMARY,
    load_local,
    merge_previous,
    run_local,
    save_local,
    summary_path,
    sweep_dir,
)
from newsclf.sweep.model import (  # noqa: F401
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    SUMMARY_VERSION,
    Sweep,
    Trial,
    first_line,
)
