"""Exporters: one function per format behind one signature, parity checks, and a file audit.

Imports torch and the converters inside the functions that need them; never imports pipeline/.
"""
