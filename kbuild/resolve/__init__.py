"""resolve: the plan's requirements locked for the spin's platform
(pip-tools, with pip patched for foreign platforms), and the locked wheels
fetched into the content-addressed cache."""
