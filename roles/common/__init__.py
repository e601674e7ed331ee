"""Helpers shared by every role: settings, value checks, OS family, secrets."""
