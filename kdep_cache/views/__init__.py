"""How a view is made: image discovery and decoding (+ SVG), replayable augmentation
parameters, the CPU render, the device (photometric) part and nvJPEG."""
