"""Frame sources, the wire protocol and the frame publisher."""
