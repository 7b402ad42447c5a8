"""mailsort: sorts a freelancer's client mail by urgency and working hours, and answers after hours."""

__version__ = "0.1.0"
