"""Qt dashboard of a running online CNMF-E extraction."""
