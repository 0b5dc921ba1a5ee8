"""Checkpoint folders: the files training writes (folder.py), LeRobot ACT checkpoints (lerobot_act.py),
the one reader of any kind of folder (reader.py) and the conversions between them (convert.py)."""
