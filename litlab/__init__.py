"""litlab's framework glue: building objects from configs, logging, figures."""
