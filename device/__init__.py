"""grasptpu device side: the runner that lives on the board (numpy + a TFLite runtime only).

It must never import from `host`: the board receives this package and the model folder, nothing else.
"""
