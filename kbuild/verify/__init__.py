"""verify: the samples run in the finished artifact (here, in a container or
under emulation), the SBOM, and the build report."""
