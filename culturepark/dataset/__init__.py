"""The dataset as a product: runs and refinements → splits, a card and a manifest (`dataset build`),
checked again by `dataset verify`. It lives in the face because it reads every stage: runs (agents),
refinements (trainers) and evaluation results (benchmarks), like the report page."""
