"""Stage 4, quantised model folders -> boards: the inventory, SSH commands, the deploy lock,
atomic releases, and benchmarks and tests run on the board (or here, through the same runner)."""
