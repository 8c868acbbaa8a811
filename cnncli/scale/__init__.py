"""Scaling `cnn top` out of one process (Ray Data). Nothing here is imported unless asked for."""
