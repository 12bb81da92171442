"""The engine every method runs on; private, so that it can change without breaking users.

``checks`` validates arguments, ``call`` prepares a call (inputs, targets, the clean forward
pass, the work dtype) and is the methods' base class, ``loop`` is the one optimisation loop,
``model_state`` the guard that leaves the caller's model and random state as found, ``hooks``
records and replaces layer outputs, ``layout`` moves channels-last inputs, ``compat`` is the only
importer of Captum's private helpers, ``files`` and ``distributed`` serve whole-dataset runs.
"""
