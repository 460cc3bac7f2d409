"""The hand-written core every chapter builds on; nothing here is specific to one chapter.

``profiles``  profiles, device choice and seeding
``chapter``   the one call that sets a chapter up, and its recorded (and glued) metrics
``network``   the network policy (``AIGC_OFFLINE=1`` forbids connections; hosts are probed, never waited on)
``assets``    every data set, corpus, tokenizer and set of weights, with its offline and online sources
``checkpoints`` the keyed load-else-train cache with sha256 sidecars and atomic writes
``train``     the training loop, the optimizer step, parameter groups, warm-up + cosine, a stopwatch
``metrics``   the referee: the offline classifier FID, Inception Score, coverage and label agreement
``plotting``  figures: image grids, curves, bar charts, architecture diagrams
``results``   a chapter's metrics and quality bars
``display``   show a core function's source on the page (a chapter's own code is in its cells)
"""
