"""Scaling-law machinery: FLOPs accounting, model grids, iso-FLOP planning and fits."""
