"""grasptpu host side: everything that runs on the workstation, from recordings to models/."""

__version__ = "0.1.0"
