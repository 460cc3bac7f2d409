"""The shared core every chapter builds on; chapter modules import it and never each other.

``profiles``  profiles, device choice and seeding
``chapter``   the one call that sets a chapter up, and its recorded (and glued) metrics
``network``   the network policy (``AIGC_OFFLINE=1`` forbids connections; hosts are probed, never waited on)
``assets``    every data set, corpus, tokenizer and set of weights, with its offline and online sources
``checkpoints`` the keyed load-else-train cache with sha256 sidecars and atomic writes
``train``     the training loop, the optimizer step, parameter groups, warm-up + cosine, a stopwatch
``gan``       the GAN objective (both generator losses) and the discriminator/generator step
``metrics``   the offline classifier FID, Inception Score and class coverage on Fashion-MNIST
``plotting``  figures: image grids, curves, bar charts, architecture diagrams
``results``   a chapter's metrics and quality bars
``display``   show a function's source on the page, so the page shows the code that runs
"""
