"""Envoy resources for the regions; the only package that imports envoy-data-plane."""
