"""Background services: the reaper, the retention sweeper and the webhook sender (`easel
services`, or inside `easel serve`), and each worker's presence. `host.run_services` runs a set
of them and stops the process if one dies."""
