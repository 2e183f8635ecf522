"""kubescribe operator: reconciles SpeechModel resources into Deployments, Services and HPAs."""
