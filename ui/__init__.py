"""Streamlit viewer."""
