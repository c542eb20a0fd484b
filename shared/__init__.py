"""Code that both the API and the workers use: settings, storage, job records, images."""
