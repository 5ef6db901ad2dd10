"""Flow matching: schedule, samplers (plain functions of one signature), guidance, windows."""
