"""Speed benchmarks: litlab's ``train.py`` path against a plain PyTorch loop on the same work.

``python -m benchmarks.run`` (``make bench``) writes ``benchmarks/RESULTS.md``; see its docstring.
"""
