"""Training of the spam classifier: corpus readers, fitting, held-out evaluation, model card.

Run as `python -m training --corpus DIR... [--out DIR] [--feedback DIR] [--force]`
(what `gateway train` and `make train` call). Depends on `gateway.features`, never the reverse.
"""
