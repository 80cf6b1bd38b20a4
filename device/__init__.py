"""grasptpu device side: the runner that lives on the board (numpy + a TFLite runtime only).

It must never import from `host`: a release on the board holds this package, `firmware_tests/` and
the model folders' `device.contract.BOARD_FILES`, nothing of host/.
"""
