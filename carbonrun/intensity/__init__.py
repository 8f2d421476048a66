"""intensity"""
