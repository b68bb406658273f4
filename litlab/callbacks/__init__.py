"""Lightning callbacks: checkpoints come from Lightning; figures and probes live here."""
