"""How OpenTelemetry hears about a generation: names, spans, events, metrics. No torch here."""
