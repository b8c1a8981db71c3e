"""The gRPC edge: Envoy's ext_proc stream in, core decisions out."""
