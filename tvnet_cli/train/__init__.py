"""Training: `flow` (TVNet on optical flow) and `action` (TVNet + classifier end to end) keep
their data, loss and loop; `scaffold` holds what both share (checkpoint file, resume policy,
CSV log, device/threads/torchrun set-up) and `chart` the PNG charts."""
