_instruments = ("transformers >= 4.56, < 6",)

_supports_metrics = True
