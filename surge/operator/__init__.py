"""What a person running surge unattended looks at: ``surge report`` (realised PnL over a period) and
``surge watch`` (a live dashboard). Both read ``$SURGE_HOME`` only and never write it, so they run from
another terminal (or cron) while ``surge run`` trades.
"""
