"""Deployment: the SAM template, the packager, and (sam.local) the local emulation of the deployment."""
