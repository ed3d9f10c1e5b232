//! Record batches: the unit a producer sends, a segment stores and a consumer receives.
