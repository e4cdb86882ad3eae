"""What the engine hands out: the results file, its wire stream, exports and state files.

:mod:`.stream` (encode/decode of the results socket's messages), :mod:`.store` (the results
file: writer, reader, recovery), :mod:`.export` (NWB, CaImAn, CellReg), :mod:`.state_file`
(model checkpoints and saved initialisations).
"""
