"""Compute Engine: the training VM. Create or restart it for a run, follow its job, list it, stop it.

- clients.py    the compute_v1 clients (injectable: tests pass real ones pointed at a local stand-in)
- labels.py     how newsclf finds its VMs and what it tells the startup script (labels, metadata keys)
- hardware.py   machine types, GPUs and the zones that offer them, checked before any VM is paid for
- request.py    what `cloud run` asks for, validated, and the Instance body it becomes
- errors.py     Compute Engine errors in one line naming the fix; capacity and quota failures
- vm.py         one VM as newsclf sees it; listing, finding, reading and waiting on VMs
- lifecycle.py  create or reshape and restart a VM for a run, stop or delete it
- store.py      a run's files in the bucket, as the laptop reads them (status.json, metrics, logs)
- follow.py     following a run: the serial port's lines, status ticks, the outcome
- prices.py     a small price table: estimates, not a bill

The VM runs newsclf/cloud/startup.sh. Google imports happen inside functions (importing these
modules stays cheap).
"""
