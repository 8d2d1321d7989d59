"""Applying a trained run to new scans."""
