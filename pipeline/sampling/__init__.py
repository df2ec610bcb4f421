"""``kdpipe sample``: the NVlabs command-line tools' outputs from any teacher kdpipe loads.

``images`` (``gen_images.py``: ``seedNNNN.png`` per seed, or one contact sheet), ``mixing`` (``style_mixing.py``:
the row x column style-mixing grid), ``video`` (``gen_video.py``: a cubic interpolation video through the seeds'
ws). Same seed, truncation and noise mode -> the same image as the official tools for the same weights.
"""
