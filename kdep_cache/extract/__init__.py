"""Stage 1: run the teacher once over K replayable views per image; write a raw cache."""
