"""Configuration: params.yaml as typed sections, and model sections as their kinds' configs."""
